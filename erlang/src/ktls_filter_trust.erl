%% @doc Trusted peers (option `trusted_peers'): peers that get more than the
%% default policy, for remote shells, observer and release scripts, while
%% every other peer keeps it.
%%
%% A trusted connection's messages are decoded and counted as on any
%% connection, but nothing is dropped: what the policy would have refused
%% is kept and counted as `would_drop' (the policy of filter_mode monitor;
%% no handler is asked). The decision is made once per connection, when the
%% dist handshake is done, from the rules in force then; `channel_inspect/1'
%% shows it (`trusted' is the rule that trusted the peer, or false) and
%% `ktls_filter:world_stats_get/0' counts trusted connections.
%%
%% Rules (a peer is trusted when any rule of the list holds):
%% <ul>
%% <li>`{cert_issuer, PemFile}': TLS only. The peer's certificate is signed by
%%     a CA certificate in PemFile (an operator CA; the node's cacertfile must
%%     accept it too, or the TLS handshake refuses the peer first).</li>
%% <li>`{cert_subject, Glob}': TLS only. The peer certificate's subject in
%%     OpenSSL's one-line form (`"/O=Example/CN=ops"') matches Glob, where
%%     `*' stands for any characters.</li>
%% <li>`{node, Glob}': the peer's node name matches Glob. Without TLS the
%%     cookie is the only secret, and any peer with it may choose its name:
%%     trust by name is then a convenience, not a security boundary.</li>
%% <li>`{all, [Rule]}': every rule of the list holds (e.g. a node name and a
%%     certificate issuer).</li>
%% </ul>
-module(ktls_filter_trust).

-include_lib("public_key/include/public_key.hrl").

-export([check_rules/1, decide/2, init/0, counts/0]).

-define(COUNTS, [trusted_connections, untrusted_connections]).

-type rule() :: {node, string()} | {cert_subject, string()} | {cert_issuer, string()}
              | {all, [rule()]}.
-export_type([rule/0]).

%% @doc Validates and normalises a list of rules (globs as strings). A
%% cert_issuer file that cannot be read or holds no certificate is named.
-spec check_rules(term()) -> {ok, [rule()]} | {error, string()} | error.
check_rules(Rules) when is_list(Rules) ->
    try
        {ok, [rule(R) || R <- Rules]}
    catch
        throw:bad -> error;
        throw:{cert_issuer, File, Why} ->
            {error, lists:flatten(io_lib:format("names cert_issuer file ~ts, which ~ts",
                                                [File, Why]))}
    end;
check_rules(_) ->
    error.

rule({node, G}) -> {node, glob(G)};
rule({cert_subject, G}) -> {cert_subject, glob(G)};
rule({cert_issuer, File}) ->
    Name = glob(File),
    case prim_file:read_file(Name) of
        {ok, _} ->
            case issuer_certs(Name) of
                [_ | _] = Cas ->
                    %% Decoded once here, not at every connection's decision.
                    persistent_term:put({?MODULE, cas, Name}, Cas),
                    {cert_issuer, Name};
                [] ->
                    throw({cert_issuer, Name, "holds no PEM certificate"})
            end;
        {error, Why} ->
            throw({cert_issuer, Name, "cannot be read (" ++ file:format_error(Why) ++ ")"})
    end;
rule({all, Rs}) when is_list(Rs), Rs =/= [] -> {all, [rule(R) || R <- Rs]};
rule(_) -> throw(bad).

glob(A) when is_atom(A) -> atom_to_list(A);
glob(B) when is_binary(B) -> glob(unicode:characters_to_list(B));
glob(S) when is_list(S), S =/= [] ->
    case io_lib:printable_unicode_list(S) of
        true -> S;
        false -> throw(bad)
    end;
glob(_) -> throw(bad).

%% The CA certificates of a PEM file, decoded; read with prim_file, which
%% works before kernel's file server runs (distribution starts first at
%% boot).
issuer_certs(File) ->
    case prim_file:read_file(File) of
        {ok, Pem} ->
            try
                [public_key:pkix_decode_cert(Der, otp)
                 || {'Certificate', Der, not_encrypted} <- public_key:pem_decode(Pem)]
            catch
                _:_ -> []
            end;
        {error, _} ->
            []
    end.

%% What check_rules/1 decoded for File (read again if the rule did not go
%% through it).
cached_issuer_certs(File) ->
    case persistent_term:get({?MODULE, cas, File}, undefined) of
        undefined -> issuer_certs(File);
        Cas -> Cas
    end.

%% @doc Whether the peer of Conn, now known as Node, is trusted: the rule
%% that trusts it (as text, for channel_inspect and the log), or false.
%% Counted, and logged at notice level when trusted.
-spec decide(ktls_filter_nif:conn(), node()) -> false | binary().
decide(Conn, Node) ->
    case ktls_filter_config:get(trusted_peers) of
        [] ->
            ktls_filter_counters:add(?MODULE, untrusted_connections),
            false;
        Rules ->
            Tls = maps:get(tls, ktls_filter_nif:info(Conn), undefined),
            Peer = #{node => atom_to_list(Node), tls => Tls},
            case lists:search(fun(R) -> holds(R, Peer) end, Rules) of
                {value, R} ->
                    Text = unicode:characters_to_binary(io_lib:format("~tp", [R])),
                    ktls_filter_counters:add(?MODULE, trusted_connections),
                    logger:notice("ktls_filter: trusting ~tp (~s) by trusted_peers rule ~ts",
                                  [Node, ktls_filter_dist_ctrl:peer_text(
                                           ktls_filter_nif:peername(Conn)), Text]),
                    Text;
                false ->
                    ktls_filter_counters:add(?MODULE, untrusted_connections),
                    false
            end
    end.

holds({node, G}, #{node := N}) -> matches(G, N);
holds({cert_subject, G}, #{tls := #{peer_subject := S}}) when S =/= <<>> ->
    matches(G, unicode:characters_to_list(S));
holds({cert_issuer, File}, #{tls := #{peer_certificate := Der}}) when is_binary(Der) ->
    issued_by_any(Der, cached_issuer_certs(File));
holds({all, Rs}, Peer) -> lists:all(fun(R) -> holds(R, Peer) end, Rs);
holds(_, _) -> false.

issued_by_any(Der, Cas) ->
    try public_key:pkix_decode_cert(Der, otp) of
        Cert -> lists:any(fun(Ca) -> issued_by(Der, Cert, Ca) end, Cas)
    catch
        _:_ -> false
    end.

issued_by(Der, Cert, Ca) ->
    try
        public_key:pkix_is_issuer(Cert, Ca) andalso public_key:pkix_verify(Der, public_key(Ca))
    catch
        _:_ -> false
    end.

public_key(#'OTPCertificate'{tbsCertificate = Tbs}) ->
    #'OTPSubjectPublicKeyInfo'{algorithm = #'PublicKeyAlgorithm'{parameters = Params},
                               subjectPublicKey = Key} = Tbs#'OTPTBSCertificate'.subjectPublicKeyInfo,
    case Key of
        #'ECPoint'{} -> {Key, Params};
        _ -> Key
    end.

%% `*' matches any run of characters, everything else itself.
matches([], []) -> true;
matches([$* | G], S) -> matches_star(G, S);
matches([C | G], [C | S]) -> matches(G, S);
matches(_, _) -> false.

matches_star(G, S) ->
    matches(G, S) orelse (S =/= [] andalso matches_star(G, tl(S))).

%% @doc Makes the counters (once, when the carrier starts).
-spec init() -> ok.
init() ->
    ktls_filter_counters:new(?MODULE, ?COUNTS).

%% @doc Connections trusted by trusted_peers, and connections the rules
%% were checked for and did not trust (none while there are no rules).
-spec counts() -> #{trusted_connections := non_neg_integer(),
                    untrusted_connections := non_neg_integer()}.
counts() ->
    ktls_filter_counters:get(?MODULE, ?COUNTS).
