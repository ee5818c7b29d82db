from xenvirtio.cli import main

main()
