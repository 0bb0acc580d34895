"""Pure tensor kernels shared by the merge methods. No I/O, no logging, no device moves."""
