import sys

from ggr_kv.cli.main import main

sys.exit(main())
