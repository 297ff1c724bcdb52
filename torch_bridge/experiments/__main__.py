"""``python -m torch_bridge.experiments {sanity,stitch,similarity} ...`` (same as ``groupcalc experiment``)."""

import sys

from ._cli import main

sys.exit(main())
