import sys

from r1reward.cli import main

sys.exit(main())
