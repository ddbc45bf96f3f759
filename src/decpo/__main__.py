from decpo.cli import main

raise SystemExit(main())
