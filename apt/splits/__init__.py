"""Instruction sets: split names, the YAML format, language-reliance controls, validation and the
`apt-bench splits` command."""
