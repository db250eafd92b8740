from fcam.cli import main

raise SystemExit(main())
