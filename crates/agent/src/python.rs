//! Finding and checking the Python interpreter. (PLACEHOLDER: being written.)
