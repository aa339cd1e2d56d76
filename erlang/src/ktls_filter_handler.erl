%% @doc Behaviour for user code that decides about inbound dist messages the
%% built-in policy marks `unsafe' (and, in monitor mode, sees everything
%% unsafe without being able to drop it).
%%
%% Callbacks run in the connection's input process, in order with the
%% connection's traffic: the message after the one being classified waits.
%% Keep them fast. A crash is logged and counts as `drop'.
%%
%% Configure with the `handler' option (or ktls_filter:config_set(handler, Mod)).
-module(ktls_filter_handler).

-export([classify/5, spawn_request_denied/1, spawn_request_init/4]).

-type hint() :: drop | safe | unsafe.
-type control() :: tuple().
-export_type([hint/0, control/0]).

%% @doc A control message without payload (link, monitor, exit...).
-callback classify(hint(), node(), control()) -> drop | keep.
%% @doc A control message with its payload (send, reg_send, spawn_request args...).
-callback classify(hint(), node(), control(), term()) -> drop | keep.
%% @doc Runs instead of M:F(A) in the spawned process when the handler
%% exports it (optional): every spawn request the policy marks unsafe is
%% redirected here instead of being asked about with classify/4, so the
%% handler decides where the code would run, and the caller always gets a
%% spawn reply and an exit. To allow, call `apply(M, F, A)'; to refuse,
%% exit (for erpc, `erpc:execute_call(Ref, M2, F2, A2)' with a function that
%% exits gives the caller `{exception, Reason}').
-callback spawn_request_init(node(), module(), atom(), list()) -> term().
-optional_callbacks([spawn_request_init/4]).

%% @doc Calls the handler; any exception or odd answer is logged and is `drop'.
-spec classify(module(), hint(), node(), control(), term() | '$none') -> drop | keep.
classify(Handler, Hint, Node, Control, Payload) ->
    try
        Answer = case Payload of
                     '$none' -> Handler:classify(Hint, Node, Control);
                     _ -> Handler:classify(Hint, Node, Control, Payload)
                 end,
        case Answer of
            keep -> keep;
            drop -> drop;
            Other ->
                logger:error("ktls_filter: handler ~p returned ~tp (not keep | drop) for ~tp "
                             "from ~p; dropping", [Handler, Other, Control, Node]),
                drop
        end
    catch
        Class:Reason:Stack ->
            logger:error("ktls_filter: handler ~p crashed on ~tp from ~p: ~p:~tp ~tp; dropping",
                         [Handler, Control, Node, Class, Reason, Stack]),
            drop
    end.

%% @doc What a redirected spawn request runs (see the spawn_request_init/4
%% callback): the configured handler's spawn_request_init(Node, M, F, A),
%% Node being the requesting node. A crash or a missing handler refuses the
%% request like spawn_request_denied/1, and a crash is logged.
-spec spawn_request_init(pid(), module(), atom(), list()) -> term().
spawn_request_init(From, M, F, A) ->
    Node = node(From),
    Handler = ktls_filter_config:get(handler),
    try
        Handler:spawn_request_init(Node, M, F, A)
    catch
        exit:Reason:_ ->
            exit(Reason);
        Class:Reason:Stack ->
            logger:error("ktls_filter: handler ~p spawn_request_init crashed on ~p:~p/~b from ~p: "
                         "~p:~tp ~tp; refusing", [Handler, M, F, length(A), Node, Class, Reason,
                                                 Stack]),
            spawn_request_denied(erpc_ref(M, F, A))
    end.

erpc_ref(erpc, execute_call, [Ref | _]) when is_reference(Ref) -> Ref;
erpc_ref(_, _, _) -> undefined.

%% @doc What a refused spawn request runs instead of its M:F(A): the filter
%% rewrites the request, so the caller's monitor or link sees the process
%% exit at once. For erpc calls (erpc:execute_call/4) the argument is the
%% call's reference and the exit reason the one erpc turns into
%% `{exception, unauthorized}' for the caller.
-spec spawn_request_denied(reference() | undefined) -> no_return().
spawn_request_denied(Ref) when is_reference(Ref) ->
    exit({Ref, exit, unauthorized});
spawn_request_denied(_) ->
    exit(unauthorized).
