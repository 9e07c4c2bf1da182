"""The measurements: localisation (Sect. 3.2), the ILSVRC error and MaxBoxAccV2, the metrics of chapter 6, class-model transfer."""
