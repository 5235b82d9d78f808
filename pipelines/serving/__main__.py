from pipelines.serving.cli import main

main()
