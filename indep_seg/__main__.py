import sys

from indep_seg.cli import main

sys.exit(main())
