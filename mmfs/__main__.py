"""``python -m mmfs ...``: the ``mmfs`` command (``mmfs.cli``)."""
import sys

from mmfs.cli import main

sys.exit(main())
