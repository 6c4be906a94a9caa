"""ms-swift plugin (``--external_plugins``): the ``qwen2_5_vl_gym`` template, Qwen2.5-VL's template for a tokenizer
whose special tokens are not at Qwen's ids (the gym's small vocabulary, see student.py). ms-swift's own template
hard-codes ``<|image_pad|>`` = 151655 and ``<|video_pad|>`` = 151656; this one asks the tokenizer. Imported by file
path inside each swift process, so it imports nothing from the gym."""
from swift.template import register_template
from swift.template.templates.qwen import Qwen2_5VLTemplate, QwenTemplateMeta


class GymQwen2_5VLTemplate(Qwen2_5VLTemplate):

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids('<|image_pad|>')

    @property
    def video_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids('<|video_pad|>')


register_template(QwenTemplateMeta('qwen2_5_vl_gym', template_cls=GymQwen2_5VLTemplate), exist_ok=True)
