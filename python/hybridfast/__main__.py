from hybridfast.cli import main

raise SystemExit(main())
