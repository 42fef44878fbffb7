from app.entry import one_blas_thread

one_blas_thread()  # the benchmarks measure what `vocalis` runs: before numpy loads
