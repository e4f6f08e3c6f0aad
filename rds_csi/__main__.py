"""`python -m rds_csi` runs the node plugin, like the `rds-csi-node` console script."""

import sys

from rds_csi.cli import main

sys.exit(main())
