"""The methods: what makes a picture of the network (saliency maps and their pipeline, backward rules, class models, DeconvNet, occlusion, features)."""
