from hsafast.cli import console

console()
