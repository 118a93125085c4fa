import sys

try:  # Ctrl-C while the modules are still loading is still a clean interrupt (exit 130)
    from proxy.cli import main
except KeyboardInterrupt:
    sys.exit(130)

sys.exit(main())
