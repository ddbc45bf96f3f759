from decpo.cli.main import main

raise SystemExit(main())
