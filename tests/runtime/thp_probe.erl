%% Run inside a VM: touches a few hundred MiB of binaries and ETS data, then
%% reports on the super carrier mapping (the largest anonymous rw mapping)
%% from /proc/self/smaps. Prints one Erlang term and halts.
-module(thp_probe).
-export([main/0]).

main() ->
    Bins = [binary:copy(<<I:8>>, 8 * 1024 * 1024) || I <- lists:seq(1, 40)],
    T = ets:new(t, [set]),
    [ets:insert(T, {I, lists:seq(1, 50)}) || I <- lists:seq(1, 200000)],
    timer:sleep(1500),  % khugepaged and fault-time THP
    {ok, Smaps} = file:read_file("/proc/self/smaps"),
    Maps = parse(binary:split(Smaps, <<"\n">>, [global]), []),
    {_, {Start, End, Flags, AnonHuge}} =
        lists:last(lists:keysort(1, [{E - S, {S, E, F, A}} || {S, E, F, A} <- Maps])),
    TotalAnonHuge = lists:sum([A || {_, _, _, A} <- Maps]),
    io:format("~p.~n", [#{sc_size_mb => (End - Start) div (1024 * 1024),
                          sc_aligned_2mb => Start rem (2 * 1024 * 1024) =:= 0,
                          sc_hg => lists:member(<<"hg">>, Flags),
                          sc_anon_huge_kb => AnonHuge,
                          total_anon_huge_kb => TotalAnonHuge,
                          keep => length(Bins) + ets:info(T, size) > 0}]),
    halt().

%% [{Start, End, VmFlags, AnonHugePagesKb}] of anonymous rw mappings.
parse([], Acc) -> lists:reverse(Acc);
parse([Line | Rest], Acc) ->
    case re:run(Line, "^([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\\s*$",
                [{capture, all_but_first, list}]) of
        {match, [S, E]} ->
            {Flags, Huge, Rest1} = fields(Rest, [], 0),
            parse(Rest1, [{list_to_integer(S, 16), list_to_integer(E, 16), Flags, Huge} | Acc]);
        nomatch ->
            parse(Rest, Acc)
    end.

fields([<<"VmFlags:", F/binary>> | Rest], _, Huge) ->
    {binary:split(string:trim(F), <<" ">>, [global]), Huge, Rest};
fields([<<"AnonHugePages:", V/binary>> | Rest], Flags, _) ->
    [N | _] = string:lexemes(V, " "),
    fields(Rest, Flags, binary_to_integer(N));
fields([_ | Rest], Flags, Huge) -> fields(Rest, Flags, Huge);
fields([], Flags, Huge) -> {Flags, Huge, []}.
