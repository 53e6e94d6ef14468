from wstui.cli import main

raise SystemExit(main())
