%% A logger handler for ktls_attack_SUITE: log events that carry a
%% {ktls_legit, Tag} report (sent by processes of other nodes whose group
%% leader is on this node) are noted in ktls_attack_server as
%% {logged, Tag} => true.
-module(ktls_attack_log_h).

-export([log/2]).

-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(#{msg := {report, #{ktls_legit := Tag}}}, _Config) ->
    gen_server:cast(ktls_attack_server, {put, {logged, Tag}, true});
log(#{msg := {report, #{report := [{ktls_legit, Tag}]}}}, _Config) ->
    gen_server:cast(ktls_attack_server, {put, {logged, Tag}, true});
log(_Event, _Config) ->
    ok.
