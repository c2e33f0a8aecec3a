"""``handprop explore``: a page where a learner watches back-propagation, and its broken
twins, at work on the article's network.

The maths stays in Python. The page (``static/``: plain scripts, SVG, no build step)
asks a small local server for everything it shows, and the server runs handprop's own
forward pass, backward passes and learning rules:

* :mod:`.session` -- the state: one training run of the article's network (two when
  comparing rules), from a seed's initial weights, stepped one image at a time;
* :mod:`.views` -- what the page draws for one image: every forward map, and the chosen
  rule's backward pass beside the exact one, with angles;
* :mod:`.api` -- the JSON API: every request validated against limits, one lock around
  the state;
* :mod:`.server` -- the loopback HTTP server (standard library), Host header checked,
  files served from the package only;
* :mod:`.export` -- a static copy of the page with precomputed traces that opens from
  ``file://``.
"""
