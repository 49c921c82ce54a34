-- One scope shape for every modality: asset, SKU and camera. Image models used to keep their
-- camera in scope_asset (model ids 'frames:<camera>:<sku>:<detector>'); they move to
-- scope_camera with ids 'frames:*:<sku>:<camera>:<detector>', the form new versions get, so an
-- old version and a newly trained one of the same scope stay one model. Artifact paths are kept.

ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS scope_camera text NOT NULL DEFAULT '*';

UPDATE model_versions
   SET scope_camera = scope_asset,
       scope_asset  = '*',
       model_id     = 'frames:*:' || scope_sku || ':'
                      || CASE WHEN scope_asset = '*' THEN '' ELSE scope_asset || ':' END || detector
 WHERE modality = 'frames' AND scope_camera = '*';

DROP INDEX IF EXISTS model_versions_scope;
CREATE INDEX IF NOT EXISTS model_versions_scope
    ON model_versions (modality, scope_asset, scope_sku, scope_camera, created_at DESC) WHERE active;
COMMENT ON COLUMN model_versions.scope_camera IS 'Camera an image model is for; * = any camera (always * for SPC and signals).';
