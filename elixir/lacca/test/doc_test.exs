defmodule Lacca.DocTest do
  use ExUnit.Case, async: true

  doctest Lacca
  doctest Lacca.Protocol
  doctest Lacca.Signal
end
