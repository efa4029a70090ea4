"""A local web page to compare compositing methods by looking: `python -m cpjax.app`.

Four tools on one page: paste / clone (draw a region, place it, cut-and-paste beside Poisson
cloning, the learned copy-paste generator and harmonisation), segment and clone (the FCN finds
the region), harmonize (a composite and its mask, before / after) and inpaint video (a box that
moves on a straight line, or uploaded masks). `cpjax.app.__main__` has the command line,
`handlers` and `jobs` what each tool does, `server` the HTTP side, `models` how systems load.
"""
