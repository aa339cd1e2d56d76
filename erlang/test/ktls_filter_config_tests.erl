%% EUnit tests of option validation: defaults, types, errors naming the option.
-module(ktls_filter_config_tests).
-include_lib("eunit/include/eunit.hrl").

defaults_test() ->
    {ok, C} = ktls_filter_config:validate([]),
    ?assertEqual(128, maps:get(backlog, C)),
    ?assertEqual(enforce, maps:get(filter_mode, C)),
    ?assertEqual(true, maps:get(deep_packet_inspection, C)),
    %% every documented option has a default
    ?assertEqual(length(ktls_filter_config:options()), maps:size(C)).

override_test() ->
    {ok, C} = ktls_filter_config:validate([{backlog, 5}, {listen_ip, "127.0.0.1"},
                                           {filter_mode, monitor}]),
    ?assertEqual(5, maps:get(backlog, C)),
    ?assertEqual({127, 0, 0, 1}, maps:get(listen_ip, C)),
    ?assertEqual(monitor, maps:get(filter_mode, C)).

later_wins_test() ->
    {ok, C} = ktls_filter_config:validate([{backlog, 5}, {backlog, 7}]),
    ?assertEqual(7, maps:get(backlog, C)).

unknown_option_names_it_test() ->
    {error, Msg} = ktls_filter_config:validate([{no_such_thing, 1}]),
    ?assertNotEqual(nomatch, string:find(Msg, "no_such_thing")).

ill_typed_option_names_it_test() ->
    {error, Msg} = ktls_filter_config:validate([{max_dist_packet, -1}]),
    ?assertNotEqual(nomatch, string:find(Msg, "max_dist_packet")),
    {error, Msg2} = ktls_filter_config:validate([{filter_mode, loud}]),
    ?assertNotEqual(nomatch, string:find(Msg2, "filter_mode")),
    {error, Msg3} = ktls_filter_config:validate([{peers, #{a => {"h", 70000}}}]),
    ?assertNotEqual(nomatch, string:find(Msg3, "peers")).

watermarks_test() ->
    {error, Msg} = ktls_filter_config:validate([{send_low_watermark, 10},
                                                {send_high_watermark, 5}]),
    ?assertNotEqual(nomatch, string:find(Msg, "send_low_watermark")).

string_values_from_command_line_test() ->
    {ok, C} = ktls_filter_config:validate([{rx_window, "4096"}, {thp, "false"}]),
    ?assertEqual(4096, maps:get(rx_window, C)),
    ?assertEqual(false, maps:get(thp, C)).

describe_lists_every_option_test() ->
    Text = lists:flatten(io_lib:format("~s", [ktls_filter_config:describe()])),
    [?assertNotEqual(nomatch, string:find(Text, atom_to_list(K)))
     || {K, _, _, _} <- ktls_filter_config:options()],
    %% Types in full (a fixed-width column once cut them short).
    ?assertNotEqual(nomatch, string:find(Text, "type: a positive integer\n")),
    ?assertNotEqual(nomatch, string:find(Text, "type: one of [port,ring]\n")).

set_validates_applies_and_stores_test() ->
    persistent_term:put({ktls_filter_config, config}, element(2, ktls_filter_config:validate([]))),
    {ok, enforce, monitor} = ktls_filter_config:set({filter_mode, monitor}, fun(_) -> ok end),
    ?assertEqual(monitor, ktls_filter_config:get(filter_mode)),
    {error, _} = ktls_filter_config:set({filter_mode, loud}, fun(_) -> ok end),
    {error, nif_says_no} = ktls_filter_config:set({max_open_fragments, 3},
                                                  fun(_) -> {error, nif_says_no} end),
    {max_open_fragments, _, Default, _} =
        lists:keyfind(max_open_fragments, 1, ktls_filter_config:options()),
    ?assertEqual(Default, ktls_filter_config:get(max_open_fragments)).

%% Options that configure the carrier when it starts are refused at run
%% time, with an error that says so; every option is one or the other.
start_only_options_are_refused_at_run_time_test() ->
    persistent_term:put({ktls_filter_config, config}, element(2, ktls_filter_config:validate([]))),
    {error, Msg} = ktls_filter_config:set({listen_port, 4370}, fun(_) -> ok end),
    ?assertNotEqual(nomatch, string:find(Msg, "applies at start only")),
    ?assertEqual(0, ktls_filter_config:get(listen_port)),
    {error, _} = ktls_filter_config:set({ktls, off}, fun(_) -> ok end),
    {ok, _, _} = ktls_filter_config:set({trusted_peers, [{node, "ops@*"}]}, fun(_) -> ok end),
    Keys = [K || {K, _, _, _} <- ktls_filter_config:options()],
    ?assertEqual([], ktls_filter_config:runtime_options() -- Keys).

%% The README's option table says what ktls_filter:options() says: every
%% option it names exists, with the default it gives (sizes such as
%% "256 KiB" in bytes).
readme_table_matches_options_test() ->
    Root = case os:getenv("KTLS_ROOT") of
               false -> filename:dirname(filename:dirname(filename:dirname(filename:dirname(
                                                                           code:which(?MODULE)))));
               R -> R
           end,
    {ok, Readme} = file:read_file(filename:join(Root, "README.md")),
    Lines = string:split(binary_to_list(Readme), "\n", all),
    [_Header, _Rule | Rest] = lists:dropwhile(fun(L) -> L =/= "| option | default | meaning |" end,
                                              Lines),
    Rows = lists:takewhile(fun(L) -> lists:prefix("|", L) end, Rest),
    ?assert(length(Rows) >= 20),
    Defaults = maps:from_list([{atom_to_list(K), D} || {K, _, D, _} <- ktls_filter_config:options()]),
    Checked = lists:append([readme_row(Row, Defaults) || Row <- Rows]),
    ?assert(length(Checked) >= 30).

readme_row(Row, Defaults) ->
    [Names, DefaultsCell | _] = string:split(string:trim(Row, leading, "| "), " | ", all),
    Keys = [K || [K] <- element(2, re:run(Names, "`([a-z_0-9]+)`",
                                          [global, {capture, all_but_first, list}]))],
    Values = [string:trim(V) || V <- re:split(DefaultsCell, ", | / ", [{return, list}])],
    ?assertEqual({Row, length(Keys)}, {Row, length(Values)}),
    [begin
         ?assert(maps:is_key(K, Defaults)),
         ?assertEqual({K, maps:get(K, Defaults)}, {K, readme_value(V)}),
         K
     end || {K, V} <- lists:zip(Keys, Values)].

readme_value(Text) ->
    case re:run(Text, "^([0-9]+) (KiB|MiB|GiB)$", [{capture, all_but_first, list}]) of
        {match, [N, Unit]} ->
            list_to_integer(N) * maps:get(Unit, #{"KiB" => 1 bsl 10, "MiB" => 1 bsl 20,
                                                  "GiB" => 1 bsl 30});
        nomatch ->
            {ok, Tokens, _} = erl_scan:string(string:trim(Text, both, "`") ++ "."),
            {ok, Term} = erl_parse:parse_term(Tokens),
            Term
    end.

%% Option files are read as OTP reads an -ssl_dist_optfile: literal terms,
%% or expressions that are evaluated.
consult_evaluates_expressions_test() ->
    File = filename:join(temp_dir(), "ktls_consult_" ++ os:getpid() ++ ".conf"),
    try
        ok = file:write_file(File, "[{server, [{certfile, \"/etc/\" ++ \"x.pem\"}]}].\n"
                                   "{filter_mode, monitor}.\n"),
        ?assertEqual({ok, [[{server, [{certfile, "/etc/x.pem"}]}], {filter_mode, monitor}]},
                     ktls_filter_config:consult(File)),
        ok = file:write_file(File, "[{client, [{verify_fun, {fun(_, _, S) -> {valid, S} end, "
                                   "[]}}]}].\n"),
        {ok, [[{client, [{verify_fun, {F, []}}]}]]} = ktls_filter_config:consult(File),
        ?assert(is_function(F, 3)),
        ok = file:write_file(File, "[{a, 1 + x}].\n"),
        {error, Msg} = ktls_filter_config:consult(File),
        ?assertNotEqual(nomatch, string:find(Msg, "line 1: evaluating the term failed"))
    after
        file:delete(File)
    end.

temp_dir() ->
    case os:getenv("TEST_TMPDIR") of
        false -> "/tmp";
        D -> D
    end.
