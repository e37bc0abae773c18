from diffsampler.cli import main

main()
