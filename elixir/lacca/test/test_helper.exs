# Tags:
#   :external - builds a throwaway mix project that depends on lacca (slow);
#               skip it while iterating with `mix test --exclude external`.
ExUnit.start()
