defmodule Lacca.TestCollector do
  @moduledoc false
  # A Collectable that forwards every chunk to a process as it arrives.
  defstruct [:pid]

  defimpl Collectable do
    def into(%{pid: pid} = c) do
      {c,
       fn
         c, {:cont, data} ->
           send(pid, {:collected, data})
           c

         c, :done ->
           c

         _, :halt ->
           :ok
       end}
    end
  end
end
