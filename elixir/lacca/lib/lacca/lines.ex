defmodule Lacca.Lines do
  @moduledoc false
  # Splits a byte stream, fed in chunks of any size, into lines (the `:lines`
  # option of stream!/3). Pure: no processes, no I/O.
  #
  #   * a line is yielded with its "\n";
  #   * with a maximum `max`, no element is longer than `max` bytes: a longer
  #     line is yielded in pieces of exactly `max` bytes, the last piece
  #     holding the rest (ending with its "\n"). A piece is yielded as soon as
  #     `max` bytes of an unfinished line have arrived, so at most `max - 1`
  #     bytes wait here;
  #   * `flush/1` yields the unfinished last line (without "\n") at the end.
  #
  # A line that lies inside one chunk is a sub-binary of that chunk (no
  # copy); only a line that straddles chunks is copied, once, when complete.

  @typedoc "The splitter: maximum element size, bytes of the unfinished line (iodata) and their size."
  @type t :: {pos_integer() | :infinity, iodata(), non_neg_integer()}

  @spec new(pos_integer() | :infinity) :: t()
  def new(max) when max == :infinity or (is_integer(max) and max > 0), do: {max, [], 0}

  @doc false
  # Feeds one chunk. Returns the complete lines (and pieces) and the new state.
  @spec feed(t(), binary()) :: {[binary()], t()}
  def feed({max, acc, size}, data) when is_binary(data) do
    scan(data, 0, max, acc, size, [])
  end

  @doc false
  # The unfinished last line, if any.
  @spec flush(t()) :: [binary()]
  def flush({_max, _acc, 0}), do: []
  def flush({_max, acc, _size}), do: [IO.iodata_to_binary(acc)]

  defp scan(data, pos, max, acc, size, out) do
    case :binary.match(data, "\n", scope: {pos, byte_size(data) - pos}) do
      {nl, 1} ->
        segment = binary_part(data, pos, nl + 1 - pos)
        line = if size == 0, do: segment, else: IO.iodata_to_binary([acc | segment])
        scan(data, nl + 1, max, [], 0, pieces(line, max, out))

      :nomatch ->
        rest_size = byte_size(data) - pos

        cond do
          rest_size == 0 ->
            {Enum.reverse(out), {max, acc, size}}

          max == :infinity or size + rest_size < max ->
            {Enum.reverse(out),
             {max, [acc | binary_part(data, pos, rest_size)], size + rest_size}}

          true ->
            # The unfinished line reached `max` bytes: yield full pieces now.
            rest = binary_part(data, pos, rest_size)
            bin = if size == 0, do: rest, else: IO.iodata_to_binary([acc | rest])
            full = div(byte_size(bin), max) * max
            out = pieces(binary_part(bin, 0, full), max, out)
            left = binary_part(bin, full, byte_size(bin) - full)
            {Enum.reverse(out), {max, if(left == "", do: [], else: left), byte_size(left)}}
        end
    end
  end

  # `line` in pieces of at most `max` bytes, prepended to `out` (reversed).
  defp pieces(line, :infinity, out), do: [line | out]
  defp pieces(line, max, out) when byte_size(line) <= max, do: [line | out]

  defp pieces(line, max, out) do
    <<piece::binary-size(max), rest::binary>> = line
    pieces(rest, max, [piece | out])
  end
end
