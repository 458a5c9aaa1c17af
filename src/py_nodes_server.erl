%% @private
%% @doc The call server of a node that serves as a worker node (every node
%% running erlpy has one, registered as `py_nodes_server').  A front node's
%% link (`py_nodes_link') sends it `py' requests; each runs in a process of
%% its own here, which sends the reply straight to the caller's alias.  One
%% message in and one out per call: a call across distribution costs what
%% its messages cost (each is a write to, and a wake-up of, the other
%% node), so nothing else crosses per call (no remote spawn, no remote
%% monitor).  The link asks for a call to be cancelled when its caller dies
%% or gives up.  It also forwards what Python's `erlang.send' sends to a
%% pid of another node (a NIF sends to local pids only).
-module(py_nodes_server).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Alias => Runner, and Runner => Alias: the calls running.  The runners
%% are linked to the server: if it goes, their jobs are cancelled (and the
%% front nodes' links, which monitor it, fail their calls at once).
-type state() :: #{calls := #{reference() => pid()}, runners := #{pid() => reference()}}.

%% @doc Starts the server, registered as `py_nodes_server'.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @private
-spec init([]) -> {ok, state()}.
init([]) ->
    process_flag(trap_exit, true),
    %% Python's erlang.send to a pid of another node comes through here.
    ok = py_nif:set_forwarder(self()),
    {ok, #{calls => #{}, runners => #{}}}.

%% @private
-spec handle_call(term(), gen_server:from(), state()) -> {reply, {error, badarg}, state()}.
handle_call(_Request, _From, S) ->
    {reply, {error, badarg}, S}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info({call, Caller, Alias, Ctx, Request, Timeout, Options}, #{calls := Calls, runners := Runners} = S) ->
    Runner = spawn_link(fun() -> run(Caller, Alias, Ctx, Request, Timeout, Options) end),
    {noreply, S#{calls := Calls#{Alias => Runner}, runners := Runners#{Runner => Alias}}};
handle_info({cancel, Alias}, #{calls := Calls, runners := Runners} = S) ->
    %% The runner's death cancels its Python job (a job follows the
    %% process that submitted it).
    case maps:take(Alias, Calls) of
        {Runner, Calls1} ->
            exit(Runner, kill),
            {noreply, S#{calls := Calls1, runners := maps:remove(Runner, Runners)}};
        error ->
            {noreply, S}
    end;
handle_info({'EXIT', Runner, Reason}, #{calls := Calls, runners := Runners} = S) ->
    case maps:take(Runner, Runners) of
        {Alias, Runners1} ->
            Reason =:= normal orelse (Alias ! {Alias, {error, {worker_exit, Reason}}}),
            {noreply, S#{calls := maps:remove(Alias, Calls), runners := Runners1}};
        error ->
            {noreply, S}
    end;
handle_info({erlpy_forward, Pid, Msg}, S) when is_pid(Pid) ->
    Pid ! Msg,
    {noreply, S};
handle_info(_Msg, S) ->
    {noreply, S}.

%% A result holding opaque handles of this node keeps them alive here as
%% long as the caller lives, so they can be passed back to this node.
run(Caller, Alias, Ctx, Request, Timeout, Options) ->
    Target = case Ctx of 0 -> any; _ -> py:context(Ctx) end,
    Reply = py:run(Target, Request, Options#{timeout => Timeout}),
    Alias ! {Alias, Reply},
    case has_local_ref(Reply) of
        true ->
            Mon = erlang:monitor(process, Caller),
            receive {'DOWN', Mon, process, _, _} -> ok end;
        false ->
            ok
    end.

has_local_ref(T) when is_reference(T) -> node(T) =:= node();
has_local_ref(T) when is_tuple(T) -> has_local_ref(tuple_to_list(T));
has_local_ref([H | T]) -> has_local_ref(H) orelse has_local_ref(T);
has_local_ref(T) when is_map(T) -> has_local_ref(maps:to_list(T));
has_local_ref(_) -> false.
