%% EUnit tests of TLS option handling: ssl options turned into the
%% carrier's form, errors naming the option, inet_tls_dist's -ssl_dist_opt
%% arguments, option files read without the file server, the node name in
%% a handshake packet.
-module(ktls_filter_tls_tests).
-include_lib("eunit/include/eunit.hrl").

%% Existing files for certfile & co (only their existence is checked here;
%% OpenSSL reads them when the carrier starts).
files() ->
    F = code:which(?MODULE),
    [{certfile, F}, {keyfile, F}, {cacertfile, F}].

defaults_are_mutual_tls_1_2_and_1_3_test() ->
    {ok, M} = ktls_filter_tls:side({server, "test"}, files()),
    ?assertMatch(#{verify := true, fail_if_no_peer_cert := true,
                   min_version := 'tlsv1.2', max_version := 'tlsv1.3'}, M),
    ?assert(is_binary(maps:get(certfile, M))).

ssl_options_translate_test() ->
    {ok, M} = ktls_filter_tls:side(
                {client, "test"},
                files() ++ [{verify, verify_none}, {depth, 3}, {versions, ['tlsv1.3']},
                            {ciphers, ["TLS_AES_128_GCM_SHA256",
                                       "ECDHE-ECDSA-AES256-GCM-SHA384"]},
                            {secure_renegotiate, true}, {erl_dist, true}]),
    ?assertMatch(#{verify := false, depth := 3, min_version := 'tlsv1.3',
                   max_version := 'tlsv1.3', ciphersuites := <<"TLS_AES_128_GCM_SHA256">>,
                   ciphers := <<"ECDHE-ECDSA-AES256-GCM-SHA384">>}, M).

cipher_maps_and_strings_test() ->
    Map = #{key_exchange => ecdhe_rsa, cipher => aes_128_gcm, mac => aead, prf => sha256},
    {ok, M} = ktls_filter_tls:side({client, "test"},
                                   files() ++ [{ciphers, [Map]}]),
    ?assertEqual(<<"ECDHE-RSA-AES128-GCM-SHA256">>, maps:get(ciphers, M)),
    {ok, M2} = ktls_filter_tls:side({client, "test"},
                                    files() ++ [{ciphers, "TLS_CHACHA20_POLY1305_SHA256"}]),
    ?assertEqual(<<"TLS_CHACHA20_POLY1305_SHA256">>, maps:get(ciphersuites, M2)).

error(Side, Opts) ->
    {error, Msg} = ktls_filter_tls:side({Side, "-ktls_filter_optfile x.conf"}, Opts),
    ?assertNotEqual(nomatch, string:find(Msg, "-ktls_filter_optfile x.conf")),
    Msg.

unsupported_options_are_named_test() ->
    Msg = error(server, files() ++ [{verify_fun, {fun erlang:is_atom/1, []}}]),
    ?assertNotEqual(nomatch, string:find(Msg, "unsupported ssl option verify_fun")),
    ?assertNotEqual(nomatch, string:find(Msg, "verify_node_name")),
    ?assertNotEqual(nomatch, string:find(error(client, files() ++ [{password, "x"}]),
                                         "password")).

bad_values_are_named_test() ->
    ?assertNotEqual(nomatch, string:find(error(server, files() ++ [{versions, ['tlsv1.1']}]),
                                         "tlsv1.1")),
    ?assertNotEqual(nomatch, string:find(error(server, files() ++ [{depth, -1}]), "depth")),
    ?assertNotEqual(nomatch, string:find(error(server, files() ++ [{ciphers, ["AES128-SHA"]}]),
                                         "AES128-SHA")),
    ?assertNotEqual(nomatch, string:find(error(server, [{certfile, "/no/such.pem"}]),
                                         "/no/such.pem")),
    ?assertNotEqual(nomatch, string:find(error(server, [{verify, verify_none}]),
                                         "certfile is required")),
    ?assertNotEqual(nomatch, string:find(error(client, [{verify, verify_peer}]),
                                         "cacertfile is required")).

ssl_dist_opt_arguments_test() ->
    ?assertEqual(none, ktls_filter_tls:from_dist_opt_args([])),
    {ok, #{server := S, client := C}} =
        ktls_filter_tls:from_dist_opt_args(["server_certfile", "/a.pem", "server_depth", "2",
                                            "server_fail_if_no_peer_cert", "true",
                                            "client_verify", "verify_peer"]),
    ?assertEqual([{certfile, "/a.pem"}, {depth, 2}, {fail_if_no_peer_cert, true}], S),
    ?assertEqual([{verify, verify_peer}], C),
    {error, Msg} = ktls_filter_tls:from_dist_opt_args(["certfile", "/a.pem"]),
    ?assertNotEqual(nomatch, string:find(Msg, "-ssl_dist_opt")).

consult_without_file_server_test() ->
    Dir = filename:join(["/tmp", "ktls_tls_tests_" ++ os:getpid()]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Good = filename:join(Dir, "good.conf"),
    ok = file:write_file(Good, "%% comment\n[{server, [{depth, 2}]},\n {client, []}].\n"
                               "{backlog, 5}.\n"),
    ?assertEqual({ok, [[{server, [{depth, 2}]}, {client, []}], {backlog, 5}]},
                 ktls_filter_config:consult(Good)),
    Bad = filename:join(Dir, "bad.conf"),
    ok = file:write_file(Bad, "[{server, []}\n"),
    {error, Why} = ktls_filter_config:consult(Bad),
    ?assertNotEqual(nomatch, string:find(Why, "line")),
    ?assertMatch({error, _}, ktls_filter_config:consult(filename:join(Dir, "missing"))),
    file:del_dir_r(Dir).

name_in_handshake_packet_test() ->
    ?assertEqual(<<"a@h">>, ktls_filter_tls:name_in_packet(<<$n, 0, 6, 1, 2, 3, 4, "a@h">>)),
    ?assertEqual(<<"b@h">>, ktls_filter_tls:name_in_packet(
                              [$N | binary_to_list(<<0:64, 7:32, 3:16, "b@h">>)])),
    ?assertEqual(undefined, ktls_filter_tls:name_in_packet(<<"x">>)).

carrier_form_test() ->
    {ok, C} = ktls_filter_config:validate([{ktls, required}, {tls_handshake_timeout, 500}]),
    ?assertEqual(undefined, ktls_filter_tls:carrier_tls(undefined, C)),
    ?assertMatch(#{server := #{}, client := #{}, ktls := required, handshake_timeout := 500},
                 ktls_filter_tls:carrier_tls(#{server => #{}, client => #{}}, C)).
