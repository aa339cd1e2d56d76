%% @doc One logger warning per refused message, at most one per connection
%% and second (the refusals held back in between are counted into the next
%% warning). Called by a connection's input process (ktls_filter_dist_ctrl)
%% for what the filter engine dropped and for what was refused in Erlang
%% (a looked-up receiver, a handler's answer).
%%
%% The warning names the peer node and address, the control message kind,
%% the destination (registered name or pid, and what the pid is), the
%% request (M:F/A or the shape of the message), the rule that refused it and
%% the option that would allow it. The event's metadata carries the same
%% fields (`ktls_refusal => #{...}') for handlers that want them structured.
-module(ktls_filter_refusal).

-export([log/3, log_if_slot/3, allow_hint/2, describe/2]).

-type info() :: #{reason := binary() | string(),
                  control => tuple() | undefined,
                  payload => term(),
                  to => pid() | atom() | reference() | undefined,
                  kind => ktls_filter_control:kind(),
                  role => atom(),
                  held => non_neg_integer()}.
-export_type([info/0]).

%% @doc Logs a refusal on Conn whose rate-limit slot is already taken
%% (the NIF took it for the filter engine's drops).
-spec log(ktls_filter_nif:conn(), node(), info()) -> ok.
log(Conn, Node, Info) ->
    Peer = ktls_filter_dist_ctrl:peer_text(ktls_filter_nif:peername(Conn)),
    {Text, Fields} = describe(Node, Info),
    logger:warning("ktls_filter: refused from ~ts (~s) ~ts", [atom_to_list(Node), Peer, Text],
                   #{ktls_refusal => Fields#{peer => Peer}}).

%% @doc Logs a refusal decided in Erlang when the connection's slot allows.
-spec log_if_slot(ktls_filter_nif:conn(), node(), info()) -> ok.
log_if_slot(Conn, Node, Info) ->
    case ktls_filter_nif:refusal_log_slot(Conn) of
        {ok, Held} -> log(Conn, Node, Info#{held => Held});
        held -> ok
    end.

%% @doc The text of the warning (after the peer) and its fields.
-spec describe(node(), info()) -> {string(), map()}.
describe(Node, Info) ->
    Reason = text(maps:get(reason, Info)),
    Control = maps:get(control, Info, undefined),
    Payload = maps:get(payload, Info, undefined),
    Map = case Control of
              undefined -> #{kind => maps:get(kind, Info, unknown)};
              _ -> ktls_filter_control:to_map(Control)
          end,
    Kind = maps:get(kind, Map),
    To = case maps:get(to, Info, undefined) of
             undefined -> maps:get(to, Map, undefined);
             T -> T
         end,
    Request = request(Kind, Map, Payload),
    Hint = allow_hint(Reason, To),
    Held = maps:get(held, Info, 0),
    Text = lists:flatten(
             [atom_to_list(Kind),
              case To of
                  undefined -> "";
                  _ -> [" to ", destination(To, maps:get(role, Info, undefined))]
              end,
              case Request of
                  "" -> "";
                  _ -> [": ", Request]
              end,
              "; rule: ", Reason,
              "; to allow: ", Hint,
              case Held of
                  0 -> "";
                  _ -> io_lib:format(" (~w more refusals on this connection since the last "
                                     "warning)", [Held])
              end]),
    {Text, #{node => Node, kind => Kind, to => To, request => Request, rule => Reason,
             allow => Hint, held => Held}}.

text(B) when is_binary(B) -> unicode:characters_to_list(B);
text(S) when is_list(S) -> S.

%% A registered name, or a pid with what it is on this node.
destination(Name, _) when is_atom(Name) ->
    atom_to_list(Name);
destination(Pid, Role0) when is_pid(Pid), node(Pid) =:= node() ->
    Name = case erlang:process_info(Pid, registered_name) of
               {registered_name, N} -> io_lib:format(" ~p", [N]);
               _ -> ""
           end,
    Role = case Role0 of
               undefined -> ktls_filter_roles:role(Pid);
               _ -> Role0
           end,
    io_lib:format("~p~s (~p process)", [Pid, Name, Role]);
destination(Other, _) ->
    io_lib:format("~p", [Other]).

%% What was asked, as far as the message shows it.
request(Kind, #{mfa := MFA}, Args) when Kind =:= spawn_request; Kind =:= spawn_request_tt ->
    spawn_shape(MFA, Args);
request(_, _, undefined) -> "";
request(_, _, {size, N}) when is_integer(N) -> io_lib:format("a message of ~w bytes", [N]);
request(_, _, Payload) -> shape(Payload).

%% erpc (and rpc, which uses it) spawns erpc:execute_call/4 or
%% execute_cast/3 with the requested M:F/A among the arguments.
spawn_shape({erpc, execute_call, 4}, [_Ref, M, F, A]) when is_atom(M), is_atom(F), is_list(A) ->
    io_lib:format("erpc call of ~p:~p/~w", [M, F, length(A)]);
spawn_shape({erpc, execute_cast, 3}, [M, F, A]) when is_atom(M), is_atom(F), is_list(A) ->
    io_lib:format("erpc cast of ~p:~p/~w", [M, F, length(A)]);
spawn_shape({erlang, apply, 2}, [Fun, _]) when is_function(Fun) ->
    "spawn of a fun (erlang:apply/2)";
spawn_shape({M, F, A}, _) ->
    io_lib:format("spawn of ~p:~p/~p", [M, F, A]).

shape({'$gen_call', _From, Req}) -> ["gen call ", tag(Req)];
shape({'$gen_cast', Req}) -> ["gen cast ", tag(Req)];
shape({call, M, F, A, _Gl}) when is_atom(M), is_atom(F), is_list(A) ->
    io_lib:format("rpc call ~p:~p/~w", [M, F, length(A)]);
shape({cast, M, F, A, _Gl}) when is_atom(M), is_atom(F), is_list(A) ->
    io_lib:format("rpc cast ~p:~p/~w", [M, F, length(A)]);
shape({system, _From, Req}) -> ["sys request ", tag(Req)];
shape({io_request, _From, _Ref, Req}) -> ["io request ", tag(Req)];
shape({'EXIT', _, _}) -> "a message shaped like an 'EXIT' signal";
shape(Other) -> ["message ", tag(Other)].

tag(T) when is_tuple(T), tuple_size(T) > 0, is_atom(element(1, T)) ->
    io_lib:format("{~p, ...}", [element(1, T)]);
tag(A) when is_atom(A) -> atom_to_list(A);
tag(T) when is_tuple(T) -> io_lib:format("tuple of ~w", [tuple_size(T)]);
tag(L) when is_list(L) -> "list";
tag(_) -> "term".

%% @doc The option that would let such a message through; for a protected
%% receiver (To: its registered name or pid) the options that apply to it.
-spec allow_hint(string() | binary(), pid() | atom() | reference() | undefined) -> string().
allow_hint(Reason, To) ->
    R = text(Reason),
    Has = fun(S) -> string:find(R, S) =/= nomatch end,
    Trusted = "trusted_peers (for operators' peers)",
    Checks =
        [{R =:= "no such process", "nothing: the receiver does not exist"},
         {lists:member(R, ["reg_send to something that is not an atom", "unknown kind",
                           "bad fun", "spawn_request without {M, F, A}",
                           "spawn_request with a bad M:F/A"]),
          "nothing: the message is malformed"},
         {Has("max_"), option_in(R) ++ ", or " ++ Trusted},
         {Has("atom budget"),
          "max_new_atoms_per_connection / max_new_atoms (if the peer really needs that many "
          "atoms), or " ++ Trusted},
         {Has("mfa not allowed") orelse Has("spawn of") orelse Has("apply"),
          "allow_mfa [{M, F, Arity}] (only what you would expose), or " ++ Trusted},
         {Has("handler"), "the handler's classify/3,4, or " ++ Trusted},
         {true, receiver_hint(Trusted, To)}],
    {true, Hint} = lists:keyfind(true, 1, Checks),
    Hint.

%% A protected receiver: trusted peers always; allow_reg_names when it was
%% addressed by name; for a process of an application, taking that
%% application out of the protected ones (unprotected_applications for
%% OTP's own, out of system_applications for one listed there). A process
%% the runtime started before any application (init, logger...) belongs to
%% none.
receiver_hint(Trusted, To) ->
    Pid = case To of
              _ when is_pid(To) -> To;
              _ when is_atom(To), To =/= undefined -> whereis(To);
              _ -> undefined
          end,
    App = case is_pid(Pid) andalso node(Pid) =:= node() andalso
              application:get_application(Pid) of
              {ok, A} -> A;
              _ -> undefined
          end,
    ByName = [io_lib:format("allow_reg_names [~p]", [To]) || is_atom(To), To =/= undefined],
    ForApp = case App of
                 undefined ->
                     [];
                 _ ->
                     case lists:member(App, option(system_applications)) of
                         true -> [io_lib:format("taking ~p out of system_applications", [App])];
                         false -> [io_lib:format("unprotected_applications [~p]", [App])]
                     end
             end,
    lists:flatten(join_or([Trusted | ByName ++ ForApp])).

join_or([One]) -> One;
join_or([One, Two]) -> [One, ", or ", Two];
join_or([One | More]) -> [One, ", ", join_or(More)].

option(Key) ->
    try ktls_filter_config:get(Key)
    catch _:_ -> []
    end.

option_in(R) ->
    case re:run(R, "max_[a-z_]+", [{capture, first, list}]) of
        {match, [O]} -> O;
        nomatch -> "a larger limit"
    end.
