from vocalis.app.cli import main

main()
