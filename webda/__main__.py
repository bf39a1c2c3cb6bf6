import sys

from webda.cli import main

sys.exit(main())
