defmodule Lacca.CountingCollector do
  @moduledoc false
  # A Collectable that counts the bytes put into it; `fun` is called with
  # the count so far before each chunk is added (in the collecting process).
  defstruct fun: nil

  @doc "A collector that calls `fun` with the byte count before each chunk."
  def new(fun), do: %__MODULE__{fun: fun}

  defimpl Collectable do
    def into(%{fun: fun}) do
      {0,
       fn
         n, {:cont, data} ->
           fun.(n)
           n + byte_size(data)

         n, :done ->
           n

         _, :halt ->
           :ok
       end}
    end
  end
end
