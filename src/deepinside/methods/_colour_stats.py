"""RGB statistics of real photographs, written by ``python -m deepinside.param``
(deepinside.param.write_colour_stats); do not edit by hand.

Images: 850 ILSVRC-2012 validation photographs (ilsvrc2012-val-201, ilsvrc2012-val-650-227px),
4096 random pixels each (seed 0), 3481600 pixels, RGB in [0, 1].
"""

MEAN = [0.4606973771, 0.4483906351, 0.3982471007]
COV = [[0.08070510517, 0.06999499164, 0.06281088679],
       [0.06999499164, 0.07733556815, 0.07357657869],
       [0.06281088679, 0.07357657869, 0.08499178349]]
N_IMAGES = 850
N_PIXELS = 3481600
SOURCE = 'ilsvrc2012-val-201, ilsvrc2012-val-650-227px'
