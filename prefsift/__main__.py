import sys

from prefsift.cli import main

sys.exit(main())
