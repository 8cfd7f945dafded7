defmodule Lacca.LinesTest do
  use ExUnit.Case, async: true

  alias Lacca.Lines

  # The reference: every line with its newline (the last one without), each
  # cut into pieces of at most `max` bytes.
  defp reference(data, max) do
    data
    |> :binary.split("\n", [:global])
    |> then(fn parts -> Enum.map(Enum.drop(parts, -1), &(&1 <> "\n")) ++ [List.last(parts)] end)
    |> Enum.reject(&(&1 == ""))
    |> Enum.flat_map(&pieces(&1, max))
  end

  defp pieces(line, :infinity), do: [line]
  defp pieces(line, max) when byte_size(line) <= max, do: [line]

  defp pieces(line, max) do
    <<piece::binary-size(max), rest::binary>> = line
    [piece | pieces(rest, max)]
  end

  defp split(chunks, max) do
    {lines, state} =
      Enum.reduce(chunks, {[], Lines.new(max)}, fn chunk, {acc, state} ->
        {lines, state} = Lines.feed(state, chunk)
        {[acc | lines], state}
      end)

    List.flatten([lines | Lines.flush(state)])
  end

  # `data` cut at the given offsets.
  defp cut(data, offsets) do
    {chunks, last} =
      offsets
      |> Enum.sort()
      |> Enum.reduce({[], 0}, fn at, {acc, from} ->
        {[binary_part(data, from, at - from) | acc], at}
      end)

    Enum.reverse([binary_part(data, last, byte_size(data) - last) | chunks])
  end

  test "every cut of a small text, with and without a maximum" do
    data = "ab\n\ncde\nf\n\nghijk"

    for at <- 0..byte_size(data),
        at2 <- at..byte_size(data),
        max <- [:infinity, 1, 2, 3, 4, 100] do
      chunks = cut(data, [at, at2])
      assert split(chunks, max) == reference(data, max), "cut at #{at}, #{at2}, max #{max}"
    end
  end

  test "random texts in random chunks" do
    for seed <- 1..200 do
      :rand.seed(:exsss, {seed, seed, seed})
      size = :rand.uniform(3_000)
      # Mostly short lines, some long ones.
      data =
        for _ <- 1..size,
            into: "",
            do: if(:rand.uniform(12) == 1, do: "\n", else: <<?a + :rand.uniform(25)>>)

      offsets = for _ <- 1..:rand.uniform(20), do: :rand.uniform(size + 1) - 1
      chunks = cut(data, offsets)

      for max <- [:infinity, 1, 7, 64, 1_000] do
        assert split(chunks, max) == reference(data, max), "seed #{seed}, max #{max}"
      end
    end
  end

  test "lines inside one chunk are sub-binaries of it (not copied)" do
    # (The VM copies binaries of up to 64 bytes: those lines are longer.)
    chunk = :binary.copy(:binary.copy("0123456789abcdef", 8) <> "\n", 100)
    {lines, _} = Lines.feed(Lines.new(:infinity), chunk)
    assert length(lines) == 100
    assert Enum.all?(lines, &(:binary.referenced_byte_size(&1) == byte_size(chunk)))
  end

  test "at most max - 1 bytes of an unfinished line wait" do
    {pieces, state} = Lines.feed(Lines.new(10), :binary.copy("x", 25))
    assert pieces == [:binary.copy("x", 10), :binary.copy("x", 10)]
    assert {_, _, 5} = state
    {pieces, state} = Lines.feed(state, "xxxxx")
    assert pieces == [:binary.copy("x", 10)]
    assert Lines.flush(state) == []
  end
end
