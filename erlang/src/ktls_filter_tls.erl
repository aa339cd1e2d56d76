%% @doc TLS options of ktls_filter: ssl's option names (as in OTP's
%% `-ssl_dist_optfile' and `-ssl_dist_opt') checked and turned into what the
%% carrier's OpenSSL contexts take, and the optional binding of a peer's
%% certificate to its node name (`verify_node_name').
%%
%% Every ssl option either means the same here as in inet_tls_dist, is
%% accepted without effect (listed in `ignored/0', with why), or is a
%% start-up error that names it.
-module(ktls_filter_tls).

-export([side/2, from_dist_opt_args/1, carrier_tls/2, supported/0, ignored/0,
         check_node_name/2, client_host_check/1, check_host/4, name_in_packet/1, init/0,
         count_refusal/0, refusals/0]).

%% @doc Makes the counter of verify_node_name refusals (once, when the
%% carrier starts).
-spec init() -> ok.
init() ->
    ktls_filter_counters:new(?MODULE, [node_name_refusals]).

-spec count_refusal() -> ok.
count_refusal() ->
    ktls_filter_counters:add(?MODULE, node_name_refusals).

%% @doc Connections refused by verify_node_name so far.
-spec refusals() -> non_neg_integer().
refusals() ->
    maps:get(node_name_refusals, ktls_filter_counters:get(?MODULE, [node_name_refusals])).

%% ssl options with the same meaning here.
-spec supported() -> [atom()].
supported() ->
    [certfile, keyfile, cacertfile, verify, fail_if_no_peer_cert, depth, versions, ciphers,
     session_tickets, server_name_indication].

%% ssl options accepted without effect, with the reason.
-spec ignored() -> [{atom(), string()}].
ignored() ->
    [{erl_dist, "always true for a distribution carrier"},
     {secure_renegotiate, "renegotiation is off (TLS 1.3 has none)"},
     {reuse_sessions, "TLS 1.3 resumption is set by session_tickets (TLS 1.2 sessions are "
                      "not resumed)"},
     {hibernate_after, "the carrier has no per-connection ssl process"},
     {log_level, "TLS errors are logged by ktls_filter"},
     {log_alert, "TLS alerts are logged by ktls_filter"}].

%% Hints for ssl options that have no equivalent here.
hint(verify_fun) -> "; to bind certificates to node names set ktls_filter's verify_node_name";
hint(password) -> "; give an unencrypted keyfile";
hint(cert) -> "; give PEM files: certfile";
hint(key) -> "; give PEM files: keyfile";
hint(cacerts) -> "; give PEM files: cacertfile";
hint(versions) -> "; ktls_filter speaks 'tlsv1.2' and 'tlsv1.3'";
hint(_) -> "".

%% @doc Checks one side's ssl options (`Where' names the source in errors)
%% and returns the carrier's form of them.
-spec side({server | client, string()}, list()) -> {ok, map()} | {error, string()}.
side({Side, _} = Where, Opts) when is_list(Opts) ->
    Default = #{verify => true, fail_if_no_peer_cert => true,
                min_version => 'tlsv1.2', max_version => 'tlsv1.3'},
    try
        M = lists:foldl(fun(O, Acc) -> option(Where, O, Acc) end, Default, Opts),
        _ = Side =:= server andalso not maps:is_key(certfile, M) andalso
            throw("certfile is required"),
        _ = maps:get(verify, M) andalso not maps:is_key(cacertfile, M) andalso
            throw("cacertfile is required with {verify, verify_peer} (the default: "
                  "ktls_filter authenticates both ends)"),
        {ok, M}
    catch
        throw:Msg -> {error, where(Where) ++ lists:flatten(Msg)}
    end;
side(Where, Opts) ->
    {error, where(Where) ++ lists:flatten(io_lib:format("expected a list of ssl options, got ~tp",
                                                        [Opts]))}.

where({Side, Source}) ->
    lists:flatten(io_lib:format("TLS options (~s, ~ts): ", [Side, Source])).

option(_, {K, V}, M) when K =:= certfile; K =:= keyfile; K =:= cacertfile ->
    case is_file_name(V) of
        true ->
            File = unicode:characters_to_list(V),
            case prim_file:read_file_info(File) of
                {ok, _} -> M#{K => unicode:characters_to_binary(File)};
                {error, Why} -> throw(io_lib:format("~s ~ts: ~ts", [K, File,
                                                                    file:format_error(Why)]))
            end;
        false ->
            throw(io_lib:format("~s: ~tp is not a file name", [K, V]))
    end;
option(_, {verify, verify_peer}, M) -> M#{verify => true};
option(_, {verify, verify_none}, M) -> M#{verify => false};
option(_, {fail_if_no_peer_cert, B}, M) when is_boolean(B) -> M#{fail_if_no_peer_cert => B};
option(_, {depth, D}, M) when is_integer(D), D >= 0, D =< 100 -> M#{depth => D};
%% The client checks the server's certificate against the host of the node
%% it connects to, as ssl does (inet_tls_dist: the host is the SNI name):
%% `disable' turns the check off, a host name checks against that name.
%% No SNI extension is sent. A server ignores the option.
option({client, _}, {server_name_indication, disable}, M) -> M#{host_check => disable};
option({client, _}, {server_name_indication, Host}, M) when is_list(Host), Host =/= [] ->
    case io_lib:printable_unicode_list(Host) of
        true -> M#{host_check => Host};
        false -> throw("server_name_indication: bad value")
    end;
option({server, _}, {server_name_indication, _}, M) -> M;
%% TLS 1.3 resumption between ktls_filter nodes, on unless disabled (ssl's
%% default is off): a server sends one (stateful) ticket, a client offers
%% the last ticket of a peer's address (see the README's TLS section).
option({server, _}, {session_tickets, disabled}, M) -> M#{session_tickets => false};
option({server, _}, {session_tickets, V}, M) when V =:= stateless; V =:= stateful ->
    M#{session_tickets => true};
option({client, _}, {session_tickets, disabled}, M) -> M#{session_tickets => false};
option({client, _}, {session_tickets, V}, M) when V =:= auto; V =:= manual ->
    M#{session_tickets => true};
option(_, {versions, Vs}, M) when is_list(Vs), Vs =/= [] ->
    case [V || V <- Vs, V =/= 'tlsv1.2', V =/= 'tlsv1.3'] of
        [] ->
            Min = case lists:member('tlsv1.2', Vs) of true -> 'tlsv1.2'; false -> 'tlsv1.3' end,
            Max = case lists:member('tlsv1.3', Vs) of true -> 'tlsv1.3'; false -> 'tlsv1.2' end,
            M#{min_version => Min, max_version => Max};
        Bad ->
            throw(io_lib:format("versions: ~tp not supported~s", [Bad, hint(versions)]))
    end;
option(_, {ciphers, Spec}, M) ->
    {Tls13, Tls12} = lists:partition(fun(N) -> lists:prefix("TLS_", N) end, cipher_names(Spec)),
    case [N || N <- Tls12 ++ Tls13, not aead(N)] of
        [] -> ok;
        NotAead -> throw(io_lib:format("ciphers: ~ts not supported: the record layer (and "
                                       "kTLS) does AES-GCM and ChaCha20-Poly1305 only",
                                       [lists:join(", ", NotAead)]))
    end,
    M1 = case Tls12 of [] -> M; _ -> M#{ciphers => list_to_binary(lists:join(":", Tls12))} end,
    case Tls13 of [] -> M1; _ -> M1#{ciphersuites => list_to_binary(lists:join(":", Tls13))} end;
option(_, {K, _}, M) when is_atom(K) ->
    case lists:keymember(K, 1, ignored()) of
        true ->
            M;
        false ->
            case lists:member(K, supported()) of
                true -> throw(io_lib:format("~s: bad value", [K]));
                false -> throw(io_lib:format("unsupported ssl option ~s (ktls_filter supports ~s)~s",
                                             [K, names(supported()), hint(K)]))
            end
    end;
option(_, Other, _) ->
    throw(io_lib:format("expected {Option, Value}, got ~tp", [Other])).

names(Atoms) -> lists:join(", ", [atom_to_list(A) || A <- Atoms]).

is_file_name(V) when is_binary(V) -> V =/= <<>>;
is_file_name(V) when is_list(V) -> V =/= [] andalso io_lib:printable_unicode_list(V);
is_file_name(_) -> false.

%% ssl's cipher forms: an OpenSSL string ("A:B"), a list of such names,
%% ssl's suite maps, or the older tuples.
cipher_names(S) when is_list(S), S =/= [], is_integer(hd(S)) ->
    string:lexemes(S, ":");
cipher_names(L) when is_list(L), L =/= [] ->
    lists:flatmap(fun(S) when is_list(S) -> string:lexemes(S, ":");
                     (S) when is_binary(S) -> string:lexemes(binary_to_list(S), ":");
                     (Map) when is_map(Map) -> [suite_name(Map)];
                     ({Kex, Cipher, Mac}) ->
                          [suite_name(#{key_exchange => Kex, cipher => Cipher, mac => Mac})];
                     ({Kex, Cipher, Mac, Prf}) ->
                          [suite_name(#{key_exchange => Kex, cipher => Cipher, mac => Mac,
                                        prf => Prf})];
                     (Other) -> throw(io_lib:format("ciphers: ~tp is not a cipher suite",
                                                    [Other]))
                  end, L);
cipher_names(Other) ->
    throw(io_lib:format("ciphers: ~tp is not a list of cipher suites", [Other])).

suite_name(Map) ->
    try ssl:suite_to_openssl_str(Map)
    catch _:_ -> throw(io_lib:format("ciphers: unknown suite ~tp", [Map]))
    end.

aead(Name) ->
    string:find(Name, "GCM") =/= nomatch orelse string:find(Name, "CHACHA20") =/= nomatch.

%% @doc inet_tls_dist's `-ssl_dist_opt server_certfile F client_verify
%% verify_peer ...' arguments as ssl options per side; `none' without any.
-spec from_dist_opt_args([string()]) ->
          {ok, #{server => list(), client => list()}} | none | {error, string()}.
from_dist_opt_args([]) ->
    none;
from_dist_opt_args(Args) ->
    try {ok, dist_opt_pairs(Args, #{server => [], client => []})}
    catch throw:Msg -> {error, "-ssl_dist_opt: " ++ lists:flatten(Msg)}
    end.

dist_opt_pairs([], Acc) ->
    maps:map(fun(_, Opts) -> lists:reverse(Opts) end, Acc);
dist_opt_pairs(["server_" ++ Opt, Value | T], Acc) ->
    dist_opt_pairs(T, add_dist_opt(server, Opt, Value, Acc));
dist_opt_pairs(["client_" ++ Opt, Value | T], Acc) ->
    dist_opt_pairs(T, add_dist_opt(client, Opt, Value, Acc));
dist_opt_pairs([Opt | _], _) ->
    throw(io_lib:format("~ts: expected server_Option Value or client_Option Value", [Opt])).

add_dist_opt(Side, Opt, Value, Acc) ->
    Key = list_to_atom(Opt),
    V = case Key of
            _ when Key =:= certfile; Key =:= keyfile; Key =:= cacertfile; Key =:= ciphers ->
                Value;
            depth ->
                try list_to_integer(Value)
                catch error:badarg -> throw(io_lib:format("~s_depth: ~ts is not an integer",
                                                          [Side, Value]))
                end;
            _ ->
                list_to_atom(Value)
        end,
    maps:update_with(Side, fun(L) -> [{Key, V} | L] end, Acc).

%% @doc What the carrier takes (ktls_filter_nif:start/1's `tls'), or
%% undefined for plain TCP.
-spec carrier_tls(#{server := map(), client := map()} | undefined, map()) -> map() | undefined.
carrier_tls(undefined, _Config) ->
    undefined;
carrier_tls(#{server := S, client := C}, Config) ->
    #{server => S, client => C,
      ktls => maps:get(ktls, Config),
      handshake_timeout => handshake_timeout(maps:get(tls_handshake_timeout, Config))}.

%% The TLS handshake's limit ends before dist_util's net_setuptime does
%% (7 s by default, the same as ours), so that a stalled peer is closed by
%% the carrier, logged and counted as stalled, and not by dist_util's setup
%% timer, which races with it and says only setup_timer_timeout.
handshake_timeout(Ms) ->
    SetupMs = case application:get_env(kernel, net_setuptime) of
                  {ok, S} when is_integer(S), S > 0 -> S * 1000;
                  _ -> 7000
              end,
    max(1, min(Ms, SetupMs - 1000)).

%% @doc The host the server's certificate must name when this node connects
%% to Node over TLS, as ssl's client checks it: Node's host, the client's
%% server_name_indication, or none (disabled, verify_none, plain TCP).
-spec client_host_check(node()) -> string() | none.
client_host_check(Node) ->
    case ktls_filter_config:get(tls) of
        #{client := #{verify := true} = Client} ->
            case maps:get(host_check, Client, node) of
                disable -> none;
                node -> element(2, split(Node));
                Host -> Host
            end;
        _ ->
            none
    end.

%% @doc verify_node_name: the certificate of the peer on `Conn' must name
%% `Node''s host (a DNS or IP subjectAltName, or the CN when there is no
%% subjectAltName of that kind), as ssl's hostname check does.
-spec check_node_name(ktls_filter_nif:conn(), node() | binary()) -> ok | {error, string()}.
check_node_name(Conn, Node) ->
    check_host(Conn, Node, element(2, split(Node)), "verify_node_name").

%% @doc The certificate of the peer on `Conn' (node `Node') must name Host;
%% Why says which check asks (for the refusal's text).
-spec check_host(ktls_filter_nif:conn(), node() | binary(), string(), string()) ->
          ok | {error, string()}.
check_host(Conn, Node, Host, Why) ->
    Tls = maps:get(tls, ktls_filter_nif:info(Conn), undefined),
    case Tls of
        #{peer_certificate := Der} when is_binary(Der) ->
            Ref = case inet:parse_address(Host) of
                      {ok, Ip} -> [{ip, Ip}];
                      {error, _} -> [{dns_id, Host}]
                  end,
            case public_key:pkix_verify_hostname(Der, Ref) of
                true ->
                    ok;
                false ->
                    {error, lists:flatten(io_lib:format(
                              "the certificate of ~ts does not name its host ~ts "
                              "(~ts): subject ~ts",
                              [Node, Host, Why, maps:get(peer_subject, Tls)]))}
            end;
        #{} ->
            {error, lists:flatten(io_lib:format("~ts presented no certificate (~ts)",
                                                [Node, Why]))};
        _ ->
            ok  % plain TCP: nothing to bind
    end.

split(Node) when is_atom(Node) ->
    split(atom_to_binary(Node, utf8));
split(Node) ->
    case string:split(unicode:characters_to_list(Node), "@") of
        [Name, Host] -> {Name, Host};
        _ -> {atom_to_list(Node), ""}
    end.

%% @doc The node name in a dist handshake name message (send_name, 'n' or
%% 'N'), or undefined. A binary: no atom is made from a peer's bytes here.
-spec name_in_packet(list() | binary()) -> binary() | undefined.
name_in_packet(Packet) when is_list(Packet) ->
    name_in_packet(list_to_binary(Packet));
name_in_packet(<<$n, _Version:16, _Flags:32, Name/binary>>) ->
    Name;
name_in_packet(<<$N, _Flags:64, _Creation:32, Len:16, Name:Len/binary, _/binary>>) ->
    Name;
name_in_packet(_) ->
    undefined.
