from dkron_nats.cli import main

main()
