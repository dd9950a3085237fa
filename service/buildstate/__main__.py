from buildstate.cli import main

raise SystemExit(main())
