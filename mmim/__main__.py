from mmim.cli import main

raise SystemExit(main())
