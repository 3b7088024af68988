"""Stand-ins (OpenWhisk, a dCache frontend) and shared helpers for the tests, the benchmarks
and the demo. Not part of the installed package: the wheel and the image hold only streamapp/."""
