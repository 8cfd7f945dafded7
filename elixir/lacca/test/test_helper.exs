# Tags:
#   :external - builds a throwaway mix project that depends on lacca (slow);
#               skip it while iterating with `mix test --exclude external`.
#   :release  - builds a `mix release` of such a project and runs it without the
#               checkout's .venv (also :external); `make test` includes it.
#   :heavy    - gigabyte-sized transfers and the memory bound (a few seconds);
#               `mix test --exclude heavy --exclude external` while iterating.
#   :cluster  - real peer nodes (OTP's :peer) for the `node:` option: makes the
#               test node distributed on first use (starts epmd if needed);
#               a few seconds; `--exclude cluster` to leave them out.
ExUnit.start()
