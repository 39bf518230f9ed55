"""Developer tooling shared by the tests and the benchmarks (tests/, k6/, bench/): a throwaway PostgreSQL,
PgBouncer and Redis (`devtools.stack`), free ports, polling for a condition. Not part of the service: the wheel
ships `service` only."""
