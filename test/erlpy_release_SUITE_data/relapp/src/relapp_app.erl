%% Serves priv/relapp_wsgi.py from the application's own supervision tree;
%% writes the port to $RELAPP_DIR/port.
-module(relapp_app).
-behaviour(application).
-behaviour(supervisor).
-export([start/2, stop/1, init/1]).

start(_Type, _Args) ->
    Priv = unicode:characters_to_binary(code:priv_dir(relapp)),
    {ok, none} = py:eval(<<"__import__('sys').path.insert(0, d.decode())">>, #{d => Priv}),
    {ok, Sup} = supervisor:start_link(?MODULE, []),
    Port = erlpy_http:port(relapp_http),
    ok = file:write_file(filename:join(os:getenv("RELAPP_DIR"), "port"), integer_to_list(Port)),
    {ok, Sup}.

stop(_State) ->
    ok.

init([]) ->
    Http = erlpy_http:child_spec(#{app => <<"relapp_wsgi:app">>, port => 0, name => relapp_http}),
    {ok, {#{strategy => one_for_one}, [Http]}}.
