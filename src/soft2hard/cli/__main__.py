import sys

from soft2hard.cli import main

sys.exit(main())
