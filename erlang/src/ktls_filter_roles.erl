%% @doc Which processes of this node are OTP system processes, and which of
%% OTP's protocols between nodes each one speaks.
%%
%% The filter protects a system process whoever addresses it, by name, by
%% pid or through an alias (see DESIGN.md, "System processes"). When a
%% message goes to a process the filter has not seen, the connection's input
%% process calls resolve/2 (in order with the traffic), which looks it up
%% with role/1 once per process and connection, and the answer is kept in
%% the filter's node-wide cache (ktls_filter_nif:learn_role/2): a pid names
%% one process for the life of the node, so an answer stays right.
%%
%% A system process is one of the processes the runtime starts before any
%% application (their group leader is init: init, erts_code_purger, the
%% literal area collector, erl_prim_loader, logger, socket_registry...),
%% application_controller, or a process of a system application: its group
%% leader is that application's master (the master's own group leader is
%% itself), which every process an application starts inherits. System
%% applications are OTP's own (otp_applications/0) but those of the
%% `unprotected_applications' option, plus the `system_applications' option.
-module(ktls_filter_roles).

-export([role/1, resolve/2, system_applications/0, otp_applications/0]).

-type role() :: gone | user | system | io | net_kernel | global | pg | rex | logger_proxy.
-type memo() :: {learn | reuse, Slot :: non_neg_integer()}.
-export_type([role/0, memo/0]).

%% @doc The role of a process of this node; `gone' when it does not exist.
-spec role(pid()) -> role().
role(Pid) when is_pid(Pid), node(Pid) =:= node() ->
    case erlang:process_info(Pid, [group_leader, registered_name, initial_call,
                                   current_function]) of
        undefined ->
            gone;
        [{group_leader, GL}, {registered_name, Name}, {initial_call, IC},
         {current_function, CF}] ->
            Code = code_of(IC, CF),
            case is_system(Pid, GL, Name) orelse is_io_server(Name, Code) of
                true -> system_role(Pid, Name, Code);
                false -> user
            end
    end;
role(_) ->
    user.

%% @doc The role of a receiver the filter asked about, for the input process
%% of a connection (in the order of its traffic). `{learn, Slot}': looks
%% Pid up (role/1), tells the filter's node-wide cache and keeps the answer
%% in Slot. `{reuse, Slot}': the filter asked about the same process earlier
%% on this connection (a burst sent before the first answer reached the
%% cache) and that answer, applied already, is in Slot: it decides without
%% a look-up. Slots live in the caller's process dictionary, at most 16 (the
%% filter's kResolveSlots). A process found gone is not kept: a pid can name
%% a process that is spawned later, so each message to it looks again.
-spec resolve(pid(), memo()) -> role().
resolve(Pid, {reuse, Slot}) ->
    case get({ktls_filter_role, Slot}) of
        {Pid, Role} -> Role;
        _ -> look_up(Pid, Slot)
    end;
resolve(Pid, {learn, Slot}) ->
    look_up(Pid, Slot).

look_up(Pid, Slot) ->
    Role = role(Pid),
    ok = ktls_filter_nif:learn_role(Pid, Role),
    _ = case Role of
            gone -> erase({ktls_filter_role, Slot});
            _ -> put({ktls_filter_role, Slot}, {Pid, Role})
        end,
    Role.

%% Boot processes have init as group leader; application masters are their
%% own group leaders (every master is a system process); the processes of
%% an application have its master.
is_system(Pid, GL, Name) ->
    GL =:= whereis(init) orelse Name =:= application_controller orelse
        case application_of_master(GL) of
            undefined -> false;
            _ when GL =:= Pid -> true;
            App -> lists:member(App, system_applications())
        end.

%% kernel's io servers are their own group leaders (user always, a shell's
%% group process while it runs a request), so the group leader rule misses
%% them.
is_io_server(user, _) -> true;
is_io_server(_, {group, server, _}) -> true;
is_io_server(_, _) -> false.

application_of_master(GL) ->
    try ets:match(ac_tab, {{application_master, '$1'}, GL}) of
        [[App] | _] -> App;
        _ -> undefined
    catch
        error:badarg -> undefined
    end.

%% What a process runs: its initial call, or for a fun (whose initial call
%% is erlang:apply/2) the function it is in now; OTP's helper processes
%% (global's locker and registrar, rex's nodes observer) are funs that loop
%% in their module.
code_of({erlang, apply, 2}, {M, F, A}) -> {M, F, A};
code_of(IC, _) -> IC.

%% The protocol a system process speaks with other nodes, by its
%% registered name or the code it runs.
system_role(_Pid, net_kernel, _) -> net_kernel;
system_role(_Pid, global_name_server, _) -> global;
system_role(_Pid, global_group, _) -> global;
system_role(_Pid, global_group_check, _) -> global;
system_role(_Pid, rex, _) -> rex;
system_role(_Pid, logger_proxy, _) -> logger_proxy;
system_role(_Pid, user, _) -> io;
system_role(_Pid, standard_error, _) -> io;
system_role(_Pid, _, {global, _, _}) -> global;  % the locker and registrar
system_role(_Pid, _, {rpc, _, _}) -> rex;        % rex's nodes observer
system_role(_Pid, _, {group, server, _}) -> io;  % a shell's group leader
system_role(Pid, Name, _) when is_atom(Name), Name =/= [] ->
    %% pg scopes are registered under any name the node chose.
    case proc_lib:translate_initial_call(Pid) of
        {pg, init, _} -> pg;
        _ -> system
    end;
system_role(_Pid, _, _) ->
    system.

%% @doc OTP's applications but `unprotected_applications', and the
%% `system_applications' option.
-spec system_applications() -> [atom()].
system_applications() ->
    (otp_applications() -- option(unprotected_applications)) ++ option(system_applications).

option(Key) ->
    try ktls_filter_config:get(Key)
    catch _:_ -> []
    end.

%% @doc The applications of OTP 25 (lib/ of its source) and ktls_filter.
-spec otp_applications() -> [atom()].
otp_applications() ->
    [kernel, stdlib, sasl, compiler, crypto, ssl, public_key, asn1, inets, ssh, mnesia,
     os_mon, runtime_tools, tools, observer, debugger, et, wx, common_test, eunit,
     dialyzer, diameter, edoc, eldap, erl_docgen, erl_interface, ftp, jinterface, megaco,
     odbc, parsetools, reltool, snmp, syntax_tools, tftp, xmerl, ktls_filter].
