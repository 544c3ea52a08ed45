"""Cited answers from ranked context sets: the prompt, the chat model protocol, and reading answers back.

- :mod:`~pipeline.answer.protocol`: what answering needs from a chat model (``ChatModel``);
- :mod:`~pipeline.answer.prompt`: the versioned prompt, passages as escaped data blocks;
- :mod:`~pipeline.answer.citations`: whether an answer answers, and what its ``[n]`` cite;
- :mod:`~pipeline.answer.contract`: the ``/v1/chat/completions`` contract (models, limits, body fields);
- :mod:`~pipeline.answer.client`: ``HerokuChatModel``, the Heroku Inference chat client;
- :mod:`~pipeline.answer.extractive`: ``ExtractiveChatModel``, the offline answerer.
"""
