import sys

from automtd.cli.main import main

sys.exit(main())
