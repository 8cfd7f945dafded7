# Tags:
#   :external - builds a throwaway mix project that depends on lacca (slow);
#               skip it while iterating with `mix test --exclude external`.
#   :heavy    - gigabyte-sized transfers and the memory bound (a few seconds);
#               `mix test --exclude heavy --exclude external` while iterating.
ExUnit.start()
