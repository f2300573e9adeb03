import sys

from r1reward.cli import main

# vLLM spawns processes that re-import the main module: without the guard they would rerun the command.
if __name__ == "__main__":
    sys.exit(main())
